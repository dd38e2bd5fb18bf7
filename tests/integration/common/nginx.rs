//! A real nginx on loopback for a live test: a temporary prefix with a
//! document root, the `http { }` block the test gives, started as a daemon
//! (nginx returns once it listens) and stopped when dropped.

use std::path::PathBuf;
use std::process::Command;

pub fn installed() -> bool {
    Command::new("nginx").arg("-v").output().is_ok()
}

/// A free TCP port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http` inside its `http { }` block; `{root}` in it
    /// stands for the document root, which holds `index.html`.
    pub fn start(name: &str, http: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("conntrace-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "hello\n").unwrap();
        let conf = dir.join("nginx.conf");
        let http = http.replace("{root}", &dir.join("www").display().to_string());
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\ndaemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\nhttp {{ access_log off; {http} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let nginx = Nginx { dir, conf };
        assert!(nginx.run(&[]), "nginx starts");
        nginx
    }

    fn run(&self, extra: &[&str]) -> bool {
        Command::new("nginx")
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.dir)
            .args(extra)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.run(&["-s", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
