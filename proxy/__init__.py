"""authproxy: a local authenticating reverse proxy for AWS API Gateway."""

__version__ = "0.1.0"
