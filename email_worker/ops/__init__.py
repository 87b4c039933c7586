"""What the operator commands do: dependency checks, and jobs and templates by hand."""
