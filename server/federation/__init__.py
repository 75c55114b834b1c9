"""The coordinator's federation: the ServerApp, the protocol (orchestrator), messaging, sites,
aggregation strategies, checkpoints, simulation and leave-one-centre-out runs."""
