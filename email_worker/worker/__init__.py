"""The worker's side: the request guard, delivery of one email and of bulk batches, beat tasks."""
