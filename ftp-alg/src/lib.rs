//! FTP ALG.
