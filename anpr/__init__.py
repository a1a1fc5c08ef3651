"""Camera side: capture, plate detection, OCR, grouping reads into presence events."""
