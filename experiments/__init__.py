"""metajax experiment entry points (one folder per experiment)."""
