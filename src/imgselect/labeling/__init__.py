"""Labels: where they come from (labels: the benchmark's oracle, a person's filled CSVs or Label Studio
exports, matched by content hash) and what a person labels from (tasks: the contact sheet, the CSV template,
Label Studio tasks)."""
