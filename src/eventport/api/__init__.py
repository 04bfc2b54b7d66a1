"""The HTTP layer: thin routes that parse, authorize through the control store, and shape."""
