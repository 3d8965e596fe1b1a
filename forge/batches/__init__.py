"""Batches (OpenAI's ``/v1/batches``): the objects, the store of batches and their lines,
and the runner that sends the lines through the same providers as live traffic."""
