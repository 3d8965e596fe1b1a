"""Provider proxies: one class per wire protocol, each holding one pooled SDK client."""
