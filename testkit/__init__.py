"""What the test suite and the bench share: running the product's processes (``processes``),
services of a test's own that it can stop and restart (``services``), a TCP proxy that slows
or cuts a line (``tcpproxy``), and hand-built multipart bodies (``multipart``)."""
