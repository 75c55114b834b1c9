"""What server and client share: configs, the network, losses, blending, metrics, serialisation."""
