"""Code of naslung's MONAI Label app (imported by main.py with the app folder on sys.path)."""
