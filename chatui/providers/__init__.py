"""Model providers: each turns a request into the common stream of events."""
