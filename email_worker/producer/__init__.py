"""The producer's side of a send: validate the request, store a tracked job, publish."""
