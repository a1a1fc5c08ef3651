"""The command line that wires every package together (top of the import graph)."""
