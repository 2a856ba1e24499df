"""Readers that ESPnet's datasets use for espnet-omni's data dirs."""
