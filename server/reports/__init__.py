"""What a run leaves with the coordinator: the results folder, tracking and the HTML report."""
