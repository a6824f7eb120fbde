"""What-if runs and the demo: the one place where models meet the database."""
