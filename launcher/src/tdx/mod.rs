//! Intel TDX launch pieces: the TDVF metadata of a firmware image, the MRTD it yields and the TD
//! HOB a VMM hands to it.

pub mod mrtd;
pub mod td_hob;
pub mod tdvf;
