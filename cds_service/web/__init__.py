"""The HTTP face: the Flask app factory, blueprints, authentication, request middleware, metrics, rule pages, the preview console and the warm-up."""
