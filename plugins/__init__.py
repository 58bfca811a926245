"""moebench first-party plugins, registered through the ``moebench`` entry-point group."""
