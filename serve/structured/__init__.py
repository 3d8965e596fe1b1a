"""Structured outputs on self-hosted engines: a response format parsed and checked
(``spec``), compiled to an llguidance matcher per request (``grammar``), and enforced on
the logits of the rows it constrains (``mask``)."""
