"""Sub-commands of the ``naslung`` command line, one module each."""
