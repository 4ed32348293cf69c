//! TCP connection states and transitions, following IPVS
//! (net/netfilter/ipvs/ip_vs_proto_tcp.c, the non-secure table): a state
//! changes on the first of RST, SYN, FIN, ACK found in a segment, with one
//! table for client->server segments ("input"), one for server->client
//! ("output"), and one for directions where the balancer only sees the
//! client side (direct routing, "input only").

/// IPVS TCP states, in IPVS order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
    /// Not a TCP state: UDP flows.
    Udp = 11,
}

pub const N_STATES: usize = 12;

impl TcpState {
    /// The state numbered `v` (as carried by cluster sync messages).
    pub fn from_u8(v: u8) -> Option<TcpState> {
        use TcpState::*;
        [None, Established, SynSent, SynRecv, FinWait, TimeWait, Close, CloseWait, LastAck, Listen, SynAck, Udp]
            .get(v as usize)
            .copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
            TcpState::Udp => "UDP",
        }
    }
    /// An "active" connection in ipvsadm's sense (counted in ActiveConn).
    pub fn is_active(self) -> bool {
        self == TcpState::Established
    }
}

/// Which table a segment goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to real server, balancer sees both directions.
    Input = 0,
    /// Real server to client.
    Output = 1,
    /// Client to real server, balancer sees only this direction (DR).
    InputOnly = 2,
}

use TcpState::*;
const ES: TcpState = Established;
const SS: TcpState = SynSent;
const SR: TcpState = SynRecv;
const FW: TcpState = FinWait;
const TW: TcpState = TimeWait;
const CL: TcpState = Close;
const CW: TcpState = CloseWait;
const LA: TcpState = LastAck;
const LI: TcpState = Listen;

// [direction][event: syn, fin, ack, rst][current state]
const TABLE: [[[TcpState; 11]; 4]; 3] = [
    // input        NO  ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // output
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // input only
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// Next state for a segment with TCP `flags` travelling in `dir`.
#[inline(always)]
pub fn next(cur: TcpState, dir: Direction, flags: u8) -> TcpState {
    use crate::wire::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
    // The established fast path: ACK or no flag keeps ES in every
    // direction (see TABLE; checked by `established_shortcut_matches_table`).
    if cur == TcpState::Established && flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
        return cur;
    }
    let ev = if flags & TCP_RST != 0 {
        3
    } else if flags & TCP_SYN != 0 {
        0
    } else if flags & TCP_FIN != 0 {
        1
    } else if flags & TCP_ACK != 0 {
        2
    } else {
        return cur;
    };
    if cur as usize >= 11 {
        return cur;
    }
    TABLE[dir as usize][ev][cur as usize]
}

/// Timeouts in nanoseconds per state, from the configured seconds.
pub fn timeouts_ns(t: &ferrovs_cfg::Timeouts) -> [u64; N_STATES] {
    let s = |x: u32| x as u64 * 1_000_000_000;
    [
        s(2),
        s(t.tcp_established),
        s(t.tcp_syn_sent),
        s(t.tcp_syn_recv),
        s(t.tcp_fin_wait),
        s(t.tcp_time_wait),
        s(t.tcp_close),
        s(t.tcp_close_wait),
        s(t.tcp_last_ack),
        s(t.tcp_listen),
        s(t.tcp_synack),
        s(t.udp),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

    #[test]
    fn established_shortcut_matches_table() {
        for dir in [Direction::Input, Direction::Output, Direction::InputOnly] {
            assert_eq!(TABLE[dir as usize][2][TcpState::Established as usize], TcpState::Established);
            for flags in [0, TCP_ACK, TCP_ACK | 0x08, 0x08, 0x20, 0x08 | 0x20] {
                assert_eq!(next(TcpState::Established, dir, flags), TcpState::Established);
            }
        }
    }

    #[test]
    fn transitions_table() {
        // (description, start, direction, flags, expected)
        let cases = [
            ("client SYN", None, Direction::Input, TCP_SYN, SynRecv),
            ("server SYN-ACK keeps SYN_RECV", SynRecv, Direction::Output, TCP_SYN | TCP_ACK, SynRecv),
            ("client ACK establishes", SynRecv, Direction::Input, TCP_ACK, Established),
            ("client FIN", Established, Direction::Input, TCP_FIN | TCP_ACK, CloseWait),
            ("server FIN", Established, Direction::Output, TCP_FIN | TCP_ACK, FinWait),
            ("server FIN after client FIN", CloseWait, Direction::Output, TCP_FIN | TCP_ACK, TimeWait),
            ("ack in LAST_ACK from client closes", LastAck, Direction::Input, TCP_ACK, Close),
            ("RST closes", Established, Direction::Input, TCP_RST, Close),
            ("server opens (active FTP) SYN", None, Direction::Output, TCP_SYN, SynSent),
            ("DR client FIN", Established, Direction::InputOnly, TCP_FIN | TCP_ACK, FinWait),
            ("DR FIN in FIN_WAIT stays", FinWait, Direction::InputOnly, TCP_FIN | TCP_ACK, FinWait),
            ("no flags no change", Established, Direction::Input, 0, Established),
        ];
        for (what, s, d, f, want) in cases {
            assert_eq!(next(s, d, f), want, "{what}");
        }
    }

    #[test]
    fn ipvs_default_timeouts() {
        let t = timeouts_ns(&ferrovs_cfg::Timeouts::default());
        assert_eq!(t[Established as usize], 900_000_000_000);
        assert_eq!(t[SynRecv as usize], 60_000_000_000);
        assert_eq!(t[FinWait as usize], 120_000_000_000);
        assert_eq!(t[TimeWait as usize], 120_000_000_000);
        assert_eq!(t[Close as usize], 10_000_000_000);
        assert_eq!(t[CloseWait as usize], 60_000_000_000);
        assert_eq!(t[LastAck as usize], 30_000_000_000);
        assert_eq!(t[SynSent as usize], 120_000_000_000);
        assert_eq!(t[Udp as usize], 300_000_000_000);
    }
}
