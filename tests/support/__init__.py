"""What the tests share: real servers and processes, and waiting on them."""
