"""The spec: its typed model, the rules across keys, the limits, and its text's locations."""
