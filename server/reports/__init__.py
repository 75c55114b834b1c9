"""What a run leaves with the coordinator: the results folder, summary, tracking, the HTML report
and the exported model file."""
