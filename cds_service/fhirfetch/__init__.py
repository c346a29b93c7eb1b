"""The only FHIR client: the SSRF-pinned, byte-capped transport and the gathering of missing prefetch under one deadline."""
