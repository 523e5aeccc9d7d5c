"""HTTP routes, one module per page group; the logic they call lives in web/*.py."""
