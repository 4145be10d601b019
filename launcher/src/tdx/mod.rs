//! Intel TDX launch pieces: the TDVF metadata of a firmware image and the MRTD it yields.

pub mod mrtd;
pub mod tdvf;
