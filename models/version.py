"""The version shown by the API and the about page."""

VERSION = "0.1.0"
