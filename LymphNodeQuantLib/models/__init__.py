"""Networks and model folders: building a network from JSON, saving and loading packaged weights."""
