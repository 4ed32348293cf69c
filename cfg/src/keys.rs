//! Every key of the configuration file with its type, default and meaning,
//! kept next to the model so the documentation cannot drift from the
//! parser: ferrovs.toml(5) is generated from [`KEYS`] ([`man_page`]), and
//! the tests below check that every key the parser accepts (the serde field
//! lists of `raw.rs`, read back from its "unknown field" errors) is in the
//! table and that the table names no key the parser refuses.

/// One key of one table of the file.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    /// TOML table: `""` (top level), `engine`, `engine.timeouts`,
    /// `interface`, `neighbor`, `route`, `service`, `service.persistence`,
    /// `service.ftp`, `service.health_check`, `service.real_server`.
    pub section: &'static str,
    pub key: &'static str,
    /// TOML type and accepted values.
    pub ty: &'static str,
    /// Default when the key is absent (`None`: required or nothing).
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn k(
    section: &'static str,
    key: &'static str,
    ty: &'static str,
    default: Option<&'static str>,
    doc: &'static str,
) -> Key {
    Key { section, key, ty, default, doc }
}

/// Sections in the order of the manual, with their description.
pub const SECTIONS: &[(&str, &str)] = &[
    ("", "The top level holds only tables and arrays of tables."),
    ("engine", "[engine]: the data plane. Optional; every key has a default."),
    ("engine.timeouts", "[engine.timeouts]: connection timeouts in seconds (ipvsadm --set). The defaults are IPVS's."),
    ("interface", "[[interface]]: one per port the engine owns (kernel-bypassed)."),
    ("neighbor", "[[neighbor]]: static neighbour (ARP/ND) entries; they win over resolution."),
    ("route", "[[route]]: static routes besides the connected subnets of the interfaces."),
    ("service", "[[service]]: a virtual service: a VIP, a protocol and one or more ports."),
    ("service.persistence", "persistence = SECONDS or { ... }: persistence templates of a service."),
    ("service.ftp", "ftp = true or { ... }: the FTP application-layer gateway of a TCP service."),
    ("service.sorry_server", "sorry_server = { ... }: where new connections go while no real server takes them (keepalived's sorry_server)."),
    ("service.health_check", "[service.health_check]: active checks from the daemon over the kernel's network stack. Several checks are an array of tables, [[service.health_check]]: a real server is up while every one of them passes (keepalived's checkers of one real server); they share on_fail, and every check of the service (its servers' own too) start_down."),
    ("service.notify", "[service.notify]: programs run when a real server goes up or down by its health check and when the service's quorum is reached or lost (keepalived's notify_up, notify_down, quorum_up, quorum_down)."),
    ("service.real_server", "[[service.real_server]]: the real servers of the service above it."),
    ("cluster", "[cluster]: this node is one of several behind ECMP routers, announcing the VIPs by BGP through BIRD. Services then use scheduler mh (the same choice on every node), nodes stream connection state to each other over UDP, and ferrovs enables and disables one BIRD protocol per VIP."),
    ("cluster.node", "[[cluster.node]]: a node of the cluster and the full-NAT local addresses it owns (the same tables on every node)."),
];

pub const KEYS: &[Key] = &[
    k("", "engine", "table", None, "The [engine] table."),
    k("", "interface", "array of tables", None, "The [[interface]] tables."),
    k("", "neighbor", "array of tables", None, "The [[neighbor]] tables."),
    k("", "route", "array of tables", None, "The [[route]] tables."),
    k("", "service", "array of tables", None, "The [[service]] tables."),
    k("", "cluster", "table", None, "The [cluster] table."),
    k("engine", "workers", "integer 1..64", Some("1"), "Poll-mode worker threads; each owns one queue of every interface."),
    k("engine", "backend", "\"af_packet\" | \"dpdk\" | \"memory\"", Some("\"af_packet\""), "Packet I/O: AF_PACKET rings on kernel interfaces, DPDK (a build with --features dpdk), or in-memory ports (tests)."),
    k("engine", "cores", "array of integers", None, "CPU core of each worker, in worker order; as many entries as workers. Default: the cores of the process's CPU set in order, without core 0 when any other is allowed (IRQs and the kernel run there)."),
    k("engine", "eal_args", "array of strings", Some("[]"), "DPDK EAL arguments (backend = \"dpdk\")."),
    k("engine", "local_port_range", "port or \"LO-HI\"", Some("\"1024-65535\""), "Full NAT source ports on each local address, split evenly between the workers (at least 64)."),
    k("engine", "mbufs", "integer", Some("8192"), "mbufs per DPDK pool."),
    k("engine", "flow_table_size", "integer", Some("1048576"), "Flow-table capacity of each worker, in connections (memory is allocated up front)."),
    k("engine", "expectation_table_size", "integer 16..16777216", Some("65536"), "FTP expectation (pinhole) table capacity of each worker. When full, the requesting control connection's oldest expectation, or else the worker's oldest, is evicted (counted)."),
    k("engine", "neighbor_table_size", "integer 16..16777216", Some("4096"), "Dynamic neighbour (ARP/ND) entries of each worker. When full, the stalest is evicted (counted); static [[neighbor]] entries are not counted and never evicted."),
    k("engine", "deny_from", "array of addresses or CIDRs", Some("[]"), "Sources refused by every service, both families, as if listed in each service's deny_from (a blocklist under attack, one place for every VIP); counted source_denied. A reload that changes it removes the connections it now refuses (acl_removed)."),
    k("engine", "rp_filter", "\"off\" | \"loose\" | \"strict\"", Some("\"off\""), "Reverse-path filtering of a new connection's first packet to a VIP, both families (Linux's rp_filter 0, 2, 1): loose needs a route back to the source, strict one through the interface the packet came in on. A packet that fails is dropped (rp_filter), before the SYN proxy or the scheduler sees it."),
    k("engine", "syn_proxy_threshold", "integer", Some("flow_table_size / 16, at least 64"), "Half-open TCP connections per worker above which services with syn_proxy = \"auto\" answer SYNs with SYN cookies."),
    k("engine", "kernel_rate", "integer 1..1000000000", Some("100000"), "Frames per worker and second the exception path (interface.kernel_port) passes to the kernel; beyond it they are dropped and counted (kernel_limited)."),
    k("engine", "health_check_threads", "integer 1..65536", Some("128"), "Health checks in progress at once, at most: the checker runs each on a thread of a pool that grows to this many (and shrinks when idle); checks due beyond it wait their turn, and those that start a second or more late are counted (ferrovs_health_checks_late_total) and logged."),
    k("engine", "icmp_rate", "integer 0..1000000000", Some("1000"), "ICMP errors the balancer originates (fragmentation needed / packet too big), per worker and second: a token bucket like Linux's net.ipv4.icmp_msgs_per_sec. 0: never send them (the packets are still counted as too_big drops)."),
    k("engine", "icmp_burst", "integer 1..1000000", Some("50"), "Burst of originated ICMP errors per worker (net.ipv4.icmp_msgs_burst)."),
    k("engine", "icmp_host_rate", "integer 0..1000000000", Some("100"), "Originated ICMP errors per worker, second and destination host, within icmp_rate (Linux's per-peer net.ipv4.icmp_ratelimit): one host that keeps sending packets too big cannot use up the errors every other host needs for path MTU discovery. 0: no per-host limit."),
    k("engine", "icmp_host_burst", "integer 1..1000000", Some("10"), "Burst of originated ICMP errors per worker and destination host."),
    k("engine", "control_socket", "path", Some("\"/run/ferrovs/ferrovs.sock\""), "Unix socket of ferrovsadm (mode 0660; root and the daemon's user only)."),
    k("engine", "metrics_listen", "\"ADDRESS:PORT\"", None, "Serve Prometheus metrics at /metrics and the status page at / on this address. Off when absent."),
    k("engine", "timeouts", "table", None, "The [engine.timeouts] table."),
    k("engine.timeouts", "tcp_established", "seconds", Some("900"), "ESTABLISHED (alias: tcp)."),
    k("engine.timeouts", "tcp", "seconds", Some("900"), "Alias of tcp_established (ipvsadm --set tcp)."),
    k("engine.timeouts", "tcp_syn_sent", "seconds", Some("120"), "SYN_SENT."),
    k("engine.timeouts", "tcp_syn_recv", "seconds", Some("60"), "SYN_RECV."),
    k("engine.timeouts", "tcp_fin_wait", "seconds", Some("120"), "FIN_WAIT (alias: tcp_fin)."),
    k("engine.timeouts", "tcp_fin", "seconds", Some("120"), "Alias of tcp_fin_wait (ipvsadm --set tcpfin)."),
    k("engine.timeouts", "tcp_time_wait", "seconds", Some("120"), "TIME_WAIT."),
    k("engine.timeouts", "tcp_close", "seconds", Some("10"), "CLOSE."),
    k("engine.timeouts", "tcp_close_wait", "seconds", Some("60"), "CLOSE_WAIT."),
    k("engine.timeouts", "tcp_last_ack", "seconds", Some("30"), "LAST_ACK."),
    k("engine.timeouts", "tcp_listen", "seconds", Some("120"), "LISTEN."),
    k("engine.timeouts", "tcp_synack", "seconds", Some("120"), "SYNACK."),
    k("engine.timeouts", "udp", "seconds", Some("300"), "UDP flows."),
    k("engine.timeouts", "icmp", "seconds", Some("60"), "ICMP flows."),
    k("interface", "name", "string", None, "Name used in routes, neighbours and counters (required, unique; no control characters)."),
    k("interface", "device", "string", None, "Kernel interface (af_packet), PCI address or vdev spec (dpdk), or any label (memory). Required."),
    k("interface", "mac", "\"aa:bb:cc:dd:ee:ff\"", None, "MAC address to use. Default: the device's own."),
    k("interface", "kernel_port", "string", None, "DPDK: the exception path to the kernel for this port, a vdev spec (net_tap0,iface=fvs-kni0 or a virtio-user port), as DPVS's KNI. Frames the engine does not handle (ARP/ND and IP for addresses it does not own: the node's own address for BGP, BFD, sync, health checks) go to the kernel through it, at most engine.kernel_rate per worker and second; what the kernel sends on it leaves through this port. The port's MAC is given to it. Not with af_packet (the kernel shares the interface there)."),
    k("interface", "addresses", "array of \"ADDRESS/PREFIX\"", Some("[]"), "Addresses the engine owns on this port (answers ARP/ND, sources its own packets); their subnets are connected routes."),
    k("neighbor", "address", "IP address", None, "Neighbour address (required)."),
    k("neighbor", "mac", "\"aa:bb:cc:dd:ee:ff\"", None, "Its MAC address (required)."),
    k("neighbor", "interface", "string", None, "Interface name. Default: found by route lookup."),
    k("route", "prefix", "\"ADDRESS/PREFIX\"", None, "Destination prefix (required)."),
    k("route", "via", "IP address", None, "Gateway. Absent: on-link route (needs interface)."),
    k("route", "interface", "string", None, "Outgoing interface. Default: the interface whose subnet holds via."),
    k("service", "name", "string", None, "Service name, unique (required; no control characters); used by counters, metrics and ferrovsadm."),
    k("service", "vip", "IP address", None, "Virtual IP address (required)."),
    k("service", "protocol", "\"tcp\" | \"udp\"", Some("\"tcp\""), "Transport protocol."),
    k("service", "ports", "array of ports and \"LO-HI\" ranges", Some("[] (every port)"), "Ports served as one virtual service (like an LVS firewall-mark service)."),
    k("service", "scheduler", "rr wrr lc wlc sed nq sh dh mh lblc lblcr fo ovf twos", Some("\"wlc\""), "IPVS scheduler (the ipvsadm -s names)."),
    k("service", "forward", "\"nat\" | \"dr\" | \"tunnel\" | \"fnat\"", Some("\"nat\""), "Forwarding method: NAT (masquerading), direct routing, IPIP tunnelling, or full NAT (source and destination rewritten; needs local_addresses)."),
    k("service", "local_addresses", "array of addresses, \"CIDR\" or \"A-B\" ranges", Some("[]"), "Full NAT: the balancer's source addresses towards the real servers (at most 256, one family: the real servers', which may differ from the VIP's: IPv6 <-> IPv4 translation). Each worker owns a share of local_port_range on each; a full address moves to the next. ARP/ND are answered for them."),
    k("service", "persistence", "seconds or table", None, "Persistence templates: a timeout, or the service.persistence table."),
    k("service", "ftp", "boolean or table", Some("false"), "Enable the FTP gateway (true: control port 21), or the service.ftp table."),
    k("service", "fwmark", "integer", None, "Firewall mark this service stands for (shown as FWM by ferrovsadm -L; set by importers)."),
    k("service", "syn_proxy", "\"auto\" | \"on\" | \"off\"", Some("\"auto\""), "SYN proxy with SYN cookies (TCP NAT services): no connection state until the client's ACK proves the handshake. auto: above the worker's syn_proxy_threshold (under a SYN flood); on: always; off: never."),
    k("service", "one_packet", "bool", Some("false"), "One-packet scheduling (ipvsadm --ops), UDP services only: each datagram is scheduled on its own (a client sending from one port reaches every real server) and leaves no connection behind. As in IPVS, replies through the balancer (NAT, full NAT) find no connection: for DR, tunnel, or one-way traffic (syslog)."),
    k("service", "sched_flags", "array of strings", Some("[]"), "Scheduler flags (ipvsadm -b / --sched-flags, keepalived's sh-port etc.), for schedulers sh and mh: \"sh-fallback\" / \"mh-fallback\" (\"flag-1\"): when the hashed server is down, quiesced or overloaded the connection goes to another one instead of being refused; \"sh-port\" / \"mh-port\" (\"flag-2\"): the client's port is hashed with its address, so one client's connections spread over the servers. A flag for another scheduler is refused."),
    k("service", "allow_from", "array of addresses or CIDRs", Some("[] (any source)"), "Sources that may open connections to the service (\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"), of the VIP's family; others are dropped and counted (source_denied). The data ports bypass the kernel's firewall: this is the filter kept in iptables in front of IPVS (DPVS's whitelist). Checked on a connection's first packet (the SYN proxy does not answer a refused SYN; FTP data connections follow their control connection); a reload that changes the lists removes the connections they now refuse (counted in acl_removed)."),
    k("service", "deny_from", "array of addresses or CIDRs", Some("[]"), "Sources that may not open connections to the service, checked before allow_from (DPVS's blacklist); as allow_from otherwise."),
    k("service", "source_conn_rate", "integer 0..10000000", Some("0 (no limit)"), "New connections per second one client address may open to the service (iptables' hashlimit by source in front of IPVS, which the kernel-bypassed ports do not pass): a first packet over it is dropped and counted (source_rate); TCP clients retry their SYN. Counted after the SYN proxy's handshake when it answers (spoofed SYNs spend no client's tokens). Exact per node: every connection of a client belongs to one worker, which keeps its buckets (4,096 per worker and service, in sets of 4: a new client takes a full bucket's slot before that of a client in debt, so a client over its limit stays limited however many others come and go; with its whole set in debt the least limited slot is taken, which lets more through, never less). In a cluster each node limits what ECMP sends it."),
    k("service", "source_conn_burst", "integer 1..10000000", Some("source_conn_rate"), "The connections a client may open at once before source_conn_rate paces it."),
    k("service", "sorry_server", "table", None, "The service.sorry_server table: a destination used only while the service's quorum is down (by default: every real server is down, quiesced or at weight 0, or there is none), as keepalived's sorry_server; it is not health-checked. Connections it took are removed when a real server takes new connections again."),
    k("service", "quorum", "integer 1..4294967295", Some("1"), "keepalived's quorum: the sum of the weights of the live real servers (down ones count 0) the service needs; below it the sorry server takes every new connection and the real servers none (their connections finish). Matters only with a sorry_server."),
    k("service", "hysteresis", "integer, less than quorum", Some("0"), "keepalived's hysteresis: the service goes down when the live weight falls below quorum - hysteresis (or to 0) and up again only when it reaches quorum + hysteresis; at the daemon's start it is up from quorum + hysteresis."),
    k("service", "health_check", "table or array of tables (at most 16)", None, "The [service.health_check] table, or [[service.health_check]] tables for several checks."),
    k("service", "notify", "table", None, "The [service.notify] table: programs run on the service's events."),
    k("service", "real_server", "array of tables", None, "The [[service.real_server]] tables."),
    k("service.notify", "up", "array of strings", None, "keepalived's notify_up: run when a real server's health check takes it up. An absolute program path and its arguments, without a shell. Environment: the daemon's plus FERROVS_EVENT (up), FERROVS_SERVICE, FERROVS_SERVER, FERROVS_PORT."),
    k("service.notify", "down", "array of strings", None, "keepalived's notify_down: run when a real server's health check takes it down (FERROVS_EVENT=down)."),
    k("service.notify", "quorum_up", "array of strings", None, "keepalived's quorum_up: run when the live real servers' weights reach the quorum again (see quorum, hysteresis; FERROVS_EVENT=quorum_up, FERROVS_SERVICE), from a health check or an edit."),
    k("service.notify", "quorum_down", "array of strings", None, "keepalived's quorum_down: run when the service's quorum is lost (FERROVS_EVENT=quorum_down)."),
    k("service.notify", "user", "string", None, "The user the programs run as, with that user's primary group (keepalived's script_user). Default: the daemon's user (root)."),
    k("service.notify", "timeout", "seconds (float) 0.01..3600", Some("10.0"), "Time a program may run; then it is killed with its process group. Programs run one at a time, in the order of the events; stdin, stdout and stderr are /dev/null, a failure is logged."),
    k("service.sorry_server", "address", "IP address", None, "The sorry server (required): of the VIP's family (full NAT: the local addresses'), not one of the real servers."),
    k("service.sorry_server", "port", "1-65535", None, "Destination port. Absent: as a real server without a port (the client's port, or a single-port service's port)."),
    k("service.persistence", "timeout", "seconds", Some("300"), "How long a template outlives its last connection."),
    k("service.persistence", "netmask", "prefix length or dotted IPv4 mask", Some("32 / 128"), "Client granularity of the templates."),
    k("service.ftp", "control_ports", "array of ports", Some("[21]"), "Ports of the service that carry FTP control connections."),
    k("service.ftp", "allow_foreign_port_address", "boolean", Some("false"), "Let PORT/EPRT name an address other than the client's (FTP bounce); refused and counted otherwise."),
    k("service.ftp", "max_expectations", "integer 1..16", Some("4"), "Expectations one control connection may hold at once; a newer PASV/PORT replaces the session's oldest."),
    k("service.ftp", "allow_low_data_ports", "boolean", Some("false"), "Let data connections use ports below 1024 (refused and counted otherwise)."),
    k("service.ftp", "pinhole_timeout", "seconds", Some("60"), "How long an expected data connection may take to arrive."),
    k("service.health_check", "type", "\"tcp\" | \"send_expect\" | \"ftp\" | \"http\" | \"https\" | \"dns\" | \"udp\" | \"ping\" | \"smtp\" | \"exec\"", None, "TCP connect; send a string and expect a reply prefix; an FTP banner and login; an HTTP GET and its status; the same over TLS; a DNS query over UDP answered without an error code; a UDP datagram not refused (or answered); an ICMP echo answered; an SMTP greeting and HELO; or a program run, exit status 0 for up (required)."),
    k("service.health_check", "port", "port", None, "Port to check (none for ping). Default: the real server's."),
    k("service.health_check", "source", "IP address", None, "The address the check leaves from (keepalived's bindto), one of this host's, of the family of the address checked; not for exec. Default: the kernel's choice."),
    k("service.health_check", "address", "IP address", None, "In a real server's own health_check only: the address checked instead of the server's (keepalived's connect_ip), e.g. a management address; not for exec. Default: the real server's."),
    k("service.health_check", "send", "string", None, "What send_expect sends."),
    k("service.health_check", "expect", "string", None, "Reply prefix send_expect expects (required for send_expect)."),
    k("service.health_check", "path", "string", Some("\"/\""), "What http and https request (GET, HTTP/1.0)."),
    k("service.health_check", "host", "string", None, "The Host header http and https send; https also sends it as SNI (a DNS name) and verifies the certificate for it with tls_ca. Default: the real server's address and port."),
    k("service.health_check", "status", "integer 100..599", None, "The status http and https expect. Default: any 2xx."),
    k("service.health_check", "digest", "string", None, "http, https: the MD5 of the response's body, 32 hex digits (keepalived's digest, as its genhash prints it), checked besides the status. Default: the body is not read."),
    k("service.health_check", "tls_ca", "string", None, "https: a PEM file (absolute path) of the CA certificates the server's certificate must chain to, for host or the server's address; read at each check. Default: the certificate is not verified (as keepalived's SSL_GET), only the TLS handshake must complete."),
    k("service.health_check", "query_name", "string", Some("\".\""), "The name dns queries (keepalived's DNS_CHECK name)."),
    k("service.health_check", "query_type", "\"A\" | \"NS\" | \"CNAME\" | \"SOA\" | \"MX\" | \"TXT\" | \"AAAA\"", Some("\"SOA\""), "The record type dns queries (keepalived's DNS_CHECK type)."),
    k("service.health_check", "payload", "hex string", None, "The datagram udp sends, as hex octets (keepalived's payload: \"0a 1b2c\"). Default: an empty datagram."),
    k("service.health_check", "require_reply", "boolean", Some("false"), "udp: up only on an answer (else: up unless an ICMP port unreachable comes back within the timeout, as keepalived's UDP_CHECK)."),
    k("service.health_check", "reply", "hex string", None, "udp: what the answer must start with, as hex octets, an x digit matching any nibble (keepalived's require_reply data); implies require_reply."),
    k("service.health_check", "min_reply_length", "integer 0..65535", None, "udp: the fewest octets the answer may have (keepalived's min_reply_length); implies require_reply."),
    k("service.health_check", "max_reply_length", "integer 0..65535", None, "udp: the most octets the answer may have (keepalived's max_reply_length), at least min_reply_length; implies require_reply."),
    k("service.health_check", "helo_name", "string", None, "The name smtp gives in HELO (keepalived's helo_name). Default: this host's name."),
    k("service.health_check", "command", "array of strings", None, "What exec runs: an absolute program path and its arguments, without a shell (required for exec). Environment: the daemon's plus FERROVS_SERVICE, FERROVS_SERVER, FERROVS_PORT; killed with its process group at the timeout."),
    k("service.health_check", "user", "string", None, "The user exec runs its program as, with that user's primary group. Default: the daemon's user (root)."),
    k("service.health_check", "interval", "seconds (float)", Some("5.0"), "Time between checks."),
    k("service.health_check", "retry_interval", "seconds (float)", None, "Time to the next check after a failure that has not yet taken the server down (keepalived's delay_before_retry). Default: interval."),
    k("service.health_check", "timeout", "seconds (float)", Some("3.0"), "Time one check may take."),
    k("service.health_check", "rise", "integer 1..1000", Some("2"), "Successes in a row before a server is up again."),
    k("service.health_check", "fall", "integer 1..1000", Some("3"), "Failures in a row before a server is down."),
    k("service.health_check", "on_fail", "\"quiesce\" | \"remove\"", Some("\"quiesce\""), "A down server gets weight 0 (existing connections continue) or is removed."),
    k("service.health_check", "start_down", "boolean", Some("false"), "keepalived's alpha: the real servers start down (weight 0, as a failed server) until their check has passed rise times, at the daemon's start and when added later (reload, ferrovsadm); false: they start up."),
    k("service.real_server", "address", "IP address", None, "Real server address (required), same family as the VIP (or, with full NAT, the local addresses' family)."),
    k("service.real_server", "port", "port", None, "Destination port. Default: the port the client used."),
    k("service.real_server", "weight", "integer 0..65535", Some("1"), "Scheduler weight; 0 is quiescent (no new connections)."),
    k("service.real_server", "upper", "integer", Some("0 (none)"), "Upper connection threshold (ipvsadm -x)."),
    k("service.real_server", "lower", "integer", Some("0 (none)"), "Lower connection threshold (ipvsadm -y)."),
    k("service.real_server", "forward", "\"nat\" | \"dr\" | \"tunnel\" | \"fnat\"", None, "Forwarding method of this server. Default: the service's."),
    k("service.real_server", "proxy_protocol", "\"v1\" | \"v2\"", None, "Send the client's address and the VIP in a PROXY protocol header (HAProxy v1 text or v2 binary) at the start of every TCP connection to this server (NAT and full NAT; not with ftp). The SYN proxy does not engage for such a service."),
    k("service.real_server", "health_check", "table or array of tables (at most 16)", None, "This server's own health checks, the keys of [service.health_check], instead of the service's ([service.real_server.health_check], or [[service.real_server.health_check]] for several); health_check = [] leaves the server unchecked (always up). Their on_fail is this server's (keepalived's inhibit_on_failure per real server); start_down is the service's."),
    k("cluster", "node_id", "integer 1..255", None, "This node's id, unique in the cluster (required); carried in every sync message."),
    k("cluster", "peers", "array of addresses", Some("[]"), "sync_address of every other node: connection state is sent to each by UDP unicast. peers or multicast_group is required."),
    k("cluster", "multicast_group", "address", None, "Send connection state to this multicast group (and receive it there) instead of, or besides, unicast peers."),
    k("cluster", "sync_address", "address", None, "Kernel address of this node the sync socket binds to, on the sync network (required)."),
    k("cluster", "sync_port", "integer 1..65535", Some("8848"), "UDP port of the connection sync protocol (IPVS's sync port)."),
    k("cluster", "sync_refresh", "seconds 1..3600", Some("10"), "A connection still alive is sent again this often, so a peer that lost a message catches up."),
    k("cluster", "sync_rate", "integer 10..1000000", Some("1000"), "Sync messages per second at most (each carries many entries); beyond it entries wait for the next refresh (counted)."),
    k("cluster", "bird_socket", "path", Some("\"/run/bird/bird.ctl\""), "BIRD's control socket: ferrovs enables a VIP's protocol to announce it and disables it to withdraw it."),
    k("cluster", "bird_protocol", "string with {vip}", Some("\"fvs_{vip}\""), "Name of the BIRD protocol (a static route) announcing a VIP; {vip} is the address with . and : written as _ (fvs_10_0_0_100)."),
    k("cluster", "sync_key", "string (>= 16 bytes)", None, "Authenticate sync datagrams with this shared key (HMAC-SHA256, format version 2, replay window); every node needs the same key. Prefer sync_key_file."),
    k("cluster", "sync_key_file", "absolute path", None, "File holding the sync key (surrounding whitespace ignored, >= 16 bytes), read when the configuration is loaded (the sync thread keeps the key of the daemon's start: restart to change it); a warning at start if world-readable. Exclusive with sync_key."),
    k("cluster", "node", "array of tables", None, "The [[cluster.node]] tables."),
    k("cluster.node", "id", "integer 1..255", None, "node_id of the node this table describes (required)."),
    k("cluster.node", "local_addresses", "array of addresses, \"CIDR\" or \"A-B\" ranges", None, "Full NAT: the local addresses this node owns (required). Every local address of a full-NAT service belongs to one node; a node allocates ports only on its own, answers ARP/ND only for its own, and translates replies to any node's (a failed node's, routed to a survivor by BGP) with the synced connections. Each node's BIRD announces its own with the best preference and the peers' with less."),
    k("cluster", "drain_timeout", "seconds 0..86400", Some("30"), "On SIGTERM or ferrovsadm --drain: VIPs are withdrawn first, established connections get this long to finish, then the daemon exits."),
];

fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// ferrovs.toml(5) in roff, generated from [`KEYS`].
pub fn man_page(version: &str) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, ".TH FERROVS.TOML 5 \"\" \"ferrovs {version}\" \"File Formats\"");
    o.push_str(".SH NAME\nferrovs.toml \\- configuration file of the ferrovs load balancer\n");
    o.push_str(".SH SYNOPSIS\n/etc/ferrovs/ferrovs.toml\n");
    o.push_str(
        ".SH DESCRIPTION\nA TOML file read by \\fBferrovs run \\-\\-config\\fR FILE and checked by \\fBferrovs config check\\fR FILE \
(errors name the file and the line). Unknown keys are errors. \\fBsystemctl reload ferrovs\\fR (or SIGHUP, or \
\\fBferrovsadm \\-\\-reload\\fR) re\\-reads it; a file that does not validate is refused and the running configuration \
kept. Connections whose real server survives a reload are kept.\n",
    );
    for (sec, about) in SECTIONS {
        let keys: Vec<&Key> = KEYS.iter().filter(|x| x.section == *sec).collect();
        let _ = writeln!(o, ".SH {}", if sec.is_empty() { "TOP LEVEL".to_string() } else { roff(&sec.to_uppercase()) });
        let _ = writeln!(o, "{}", roff(about));
        for x in keys {
            let _ = writeln!(o, ".TP\n\\fB{}\\fR = \\fI{}\\fR", roff(x.key), roff(x.ty));
            let _ = write!(o, "{}", roff(x.doc));
            if let Some(d) = x.default {
                let _ = write!(o, " Default: {}.", roff(d));
            }
            o.push('\n');
        }
    }
    o.push_str(".SH EXAMPLE\n.nf\n");
    for l in EXAMPLE.lines() {
        let _ = writeln!(o, "{}", roff(l));
    }
    o.push_str(".fi\n.SH FILES\n/etc/ferrovs/ferrovs.toml\n.SH SEE ALSO\n\\fBferrovs\\fR(8), \\fBferrovsadm\\fR(8)\n");
    o
}

const EXAMPLE: &str = r#"[engine]
workers = 2
metrics_listen = "127.0.0.1:9610"

[[interface]]
name = "ext"
device = "eth1"
addresses = ["192.0.2.1/24"]

[[service]]
name = "ftp"
vip = "192.0.2.100"
ports = [21]
scheduler = "rr"
ftp = true

[[service.real_server]]
address = "192.0.2.11"

[[service.real_server]]
address = "192.0.2.12""#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The fields serde accepts in a table, from its "unknown field" error.
    fn accepted(doc: &str) -> BTreeSet<String> {
        let e = crate::Config::from_str(doc, "probe").expect_err(doc).to_string();
        let i = e.find("expected one of").or_else(|| e.find("expected")).unwrap_or_else(|| panic!("{doc}: {e}"));
        assert!(e.contains("unknown field `__probe`"), "{doc}: {e}");
        e[i..].split('`').skip(1).step_by(2).map(String::from).collect()
    }

    fn probe_doc(section: &str) -> String {
        match section {
            "" => "__probe = 1\n".into(),
            "service.persistence" => "[[service]]\npersistence = { __probe = 1 }\n".into(),
            "service.ftp" => "[[service]]\nftp = { __probe = 1 }\n".into(),
            "service.sorry_server" => "[[service]]\nsorry_server = { __probe = 1 }\n".into(),
            "service.health_check" => "[[service]]\n[service.health_check]\n__probe = 1\n".into(),
            "service.notify" => "[[service]]\n[service.notify]\n__probe = 1\n".into(),
            "service.real_server" => "[[service]]\n[[service.real_server]]\n__probe = 1\n".into(),
            "engine" | "engine.timeouts" | "cluster" => format!("[{section}]\n__probe = 1\n"),
            s => format!("[[{s}]]\n__probe = 1\n"),
        }
    }

    #[test]
    fn the_table_names_exactly_the_keys_the_parser_accepts() {
        for (sec, _) in SECTIONS {
            let parser = accepted(&probe_doc(sec));
            let table: BTreeSet<String> =
                KEYS.iter().filter(|x| x.section == *sec).map(|x| x.key.to_string()).collect();
            // serde lists canonical names; the table also documents aliases.
            for p in &parser {
                assert!(table.contains(p), "[{sec}] key {p:?} is accepted by the parser but missing from KEYS");
            }
            for t in &table {
                if !parser.contains(t) {
                    let doc = probe_doc(sec).replace("__probe = 1", &format!("{t} = 1")).replace("__probe", t);
                    let e = crate::Config::from_str(&doc, "probe").err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(
                        !e.contains("unknown field"),
                        "[{sec}] KEYS documents {t:?} but the parser refuses it: {e}"
                    );
                }
            }
        }
        let known: BTreeSet<&str> = SECTIONS.iter().map(|s| s.0).collect();
        for x in KEYS {
            assert!(known.contains(x.section), "{x:?}: unknown section");
        }
    }

    #[test]
    fn the_scheduler_key_lists_the_schedulers_of_the_sched_crate() {
        let k = KEYS.iter().find(|k| k.section == "service" && k.key == "scheduler").unwrap();
        assert_eq!(k.ty, ferrovs_sched::NAMES.join(" "));
        assert_eq!(k.default, Some(format!("\"{}\"", ferrovs_sched::DEFAULT).as_str()));
    }

    #[test]
    fn every_key_appears_in_the_man_page() {
        let page = man_page("0.0.0");
        for x in KEYS {
            assert!(page.contains(&format!("\\fB{}\\fR", roff(x.key))), "{} missing", x.key);
        }
        for (sec, _) in SECTIONS.iter().skip(1) {
            assert!(page.contains(&format!(".SH {}", roff(&sec.to_uppercase()))), "section {sec}");
        }
        assert!(page.starts_with(".TH FERROVS.TOML 5"));
    }

    #[test]
    fn the_example_is_valid() {
        crate::Config::from_str(EXAMPLE, "example").unwrap();
    }
}
