"""The coordinator: ServerApp, strategies, federated blending, validation, checkpoints, reports."""
