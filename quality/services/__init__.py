"""Label quality services: detection, routing, consensus, the relabel cycle and its schedule."""
