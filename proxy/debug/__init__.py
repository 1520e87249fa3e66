"""The debugging surface: admin endpoints and metrics, the exchange history, hints for API
Gateway's refusals, and the inspector page."""
