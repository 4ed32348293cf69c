/* Headers the ferrovs DPDK backend uses. bindgen reads this file; with
 * wrap_static_fns it also writes extern.c, which #includes it, so the
 * `static inline` functions below and in DPDK get real C symbols. */
#include <rte_config.h>
#include <rte_version.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>

/* rte_errno is a per-lcore (thread-local) variable behind a macro: bindgen
 * cannot bind it, so read it through a function. */
static inline int ferrovs_rte_errno(void) { return rte_errno; }

/* Compile-time constants that are macros over expressions bindgen does not
 * evaluate. */
static inline unsigned int ferrovs_lcore_id_any(void) { return LCORE_ID_ANY; }
static inline const char *ferrovs_rte_version(void) { return rte_version(); }

/* RSS hash types (macros over RTE_BIT64, which bindgen does not evaluate):
 * IPv4/IPv6 addresses plus TCP/UDP ports. */
static inline uint64_t ferrovs_rss_ip_tcp_udp(void)
{
	return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;
}
