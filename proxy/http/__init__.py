"""Our own HTTP/1.1 machinery: the accept loop, the client side of a connection, answers we
serialize ourselves, and the lean upstream client with its connection pool."""
