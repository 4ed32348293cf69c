//! IPVS schedulers.
