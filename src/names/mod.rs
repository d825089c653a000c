//! IPNS: keys, names and records (create, sign, validate, order).
