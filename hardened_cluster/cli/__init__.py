"""The outer ring: the command line, the lab's commands and the demo."""
