//! One shape for the messages a person reads about a file: `PATH: what went wrong`.

use std::fmt::Display;
use std::path::Path;

/// Turns an error about `path` into `PATH: error`, for `map_err`.
pub fn at<E: Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_comes_first() {
        let error = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(at(Path::new("/etc/x.env"))(error), "/etc/x.env: entity not found");
    }
}
