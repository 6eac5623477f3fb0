"""The app's train tasks."""
