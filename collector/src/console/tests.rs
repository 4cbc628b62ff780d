//! Console pages through the router.
