"""The coordinator's federation machinery: messaging, sites, the run context, aggregation
strategies, secure aggregation, checkpoints, simulation and leave-one-centre-out runs."""
