"""Apps the outbound routing tests start as real servers."""
