//! companion: which processes run inside each container of a Linux host.
//!
//! Data flows one way: the [`tracker`] knows which processes exist and in which container; the
//! [`sampler`] reads /proc for those processes every period; the [`history`] keeps the samples and
//! computes CPU shares over them; the [`api`] answers from the history.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod history;
pub mod inventory;
pub mod metrics;
pub mod privileges;
pub mod procfs;
pub mod sampler;
pub mod service;
pub mod tracker;
