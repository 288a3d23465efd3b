//! Onboarding over HTTPS: `/new` and the relay's web pages (being written).
