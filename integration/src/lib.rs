//! The lab builder: network namespaces joined by veth pairs to a bridge in a
//! dedicated namespace, nftables rules per host, torn down on drop.
