/* SPDX-License-Identifier: GPL-2.0-or-later WITH Linux-syscall-note */
/*
 * iscsikit_lio: LIO iSCSI target events over generic netlink.
 *
 * The one declaration of the family, its commands, attributes and values.
 * The module includes it; userspace (userspace/iscsikit/target/events.py)
 * keeps the same numbers in a table, and tests/unit/test_target_events.py
 * parses this file and fails when the two differ.
 *
 * Version 1. A change that renumbers or retypes anything bumps
 * ISCSIKIT_LIO_GENL_VERSION; new attributes are only appended.
 */
#ifndef _ISCSIKIT_LIO_H
#define _ISCSIKIT_LIO_H

#define ISCSIKIT_LIO_GENL_NAME		"iscsikit_lio"
#define ISCSIKIT_LIO_GENL_VERSION	1
#define ISCSIKIT_LIO_MCGRP_EVENTS	"events"

enum iscsikit_lio_cmd {
	ISCSIKIT_LIO_CMD_UNSPEC,
	ISCSIKIT_LIO_CMD_EVENT,		/* kernel -> multicast group: one target event */
	ISCSIKIT_LIO_CMD_GET_STATUS,	/* request -> reply: armed, last sequence number, lost */
	__ISCSIKIT_LIO_CMD_MAX,
};

enum iscsikit_lio_attr {
	ISCSIKIT_LIO_A_UNSPEC,
	ISCSIKIT_LIO_A_SEQ,		/* u64: per-module event number, no gaps unless lost */
	ISCSIKIT_LIO_A_EVENT,		/* u8: enum iscsikit_lio_event */
	ISCSIKIT_LIO_A_TIME_NS,		/* u64: CLOCK_MONOTONIC when the hook fired */
	ISCSIKIT_LIO_A_TARGET,		/* string: target IQN (empty for discovery) */
	ISCSIKIT_LIO_A_TPGT,		/* u16: target portal group tag */
	ISCSIKIT_LIO_A_INITIATOR,	/* string: initiator IQN */
	ISCSIKIT_LIO_A_ISID,		/* binary, 6 bytes */
	ISCSIKIT_LIO_A_TSIH,		/* u16 */
	ISCSIKIT_LIO_A_SID,		/* u32: LIO's session id (configfs info "LIO Session ID") */
	ISCSIKIT_LIO_A_CID,		/* u16: connection id */
	ISCSIKIT_LIO_A_INITIATOR_ADDR,	/* string: initiator's address (%pISc) */
	ISCSIKIT_LIO_A_INITIATOR_PORT,	/* u16 */
	ISCSIKIT_LIO_A_PORTAL_ADDR,	/* string: the target's local address of the connection */
	ISCSIKIT_LIO_A_PORTAL_PORT,	/* u16 */
	ISCSIKIT_LIO_A_AUTH,		/* string: AuthMethod used: "CHAP" or "None" */
	ISCSIKIT_LIO_A_HEADER_DIGEST,	/* u8: 0 None, 1 CRC32C */
	ISCSIKIT_LIO_A_DATA_DIGEST,	/* u8: 0 None, 1 CRC32C */
	ISCSIKIT_LIO_A_SESSION_TYPE,	/* u8: 0 Normal, 1 Discovery */
	ISCSIKIT_LIO_A_REASON,		/* u8: enum iscsikit_lio_conn_reason or _sess_reason */
	ISCSIKIT_LIO_A_STATUS_CLASS,	/* u8: Login Response Status-Class (RFC 7143 11.13.5) */
	ISCSIKIT_LIO_A_STATUS_DETAIL,	/* u8: Status-Detail */
	ISCSIKIT_LIO_A_TRANSPORT,	/* string: LIO transport name ("iSCSI/TCP", "iSER") */
	ISCSIKIT_LIO_A_NCONN,		/* u32: the session's connections after the event */
	/* GET_STATUS reply */
	ISCSIKIT_LIO_A_VERSION,		/* u32: ISCSIKIT_LIO_GENL_VERSION */
	ISCSIKIT_LIO_A_ARMED,		/* u8: 1 when every probe is registered */
	ISCSIKIT_LIO_A_LOST,		/* u64: events numbered but not sent (no memory) */
	ISCSIKIT_LIO_A_MISSING,		/* string: the symbol that could not be probed */
	ISCSIKIT_LIO_A_PAD,		/* padding for the u64 attributes (nla_put_u64_64bit) */
	__ISCSIKIT_LIO_A_MAX,
};
#define ISCSIKIT_LIO_A_MAX (__ISCSIKIT_LIO_A_MAX - 1)

enum iscsikit_lio_event {
	ISCSIKIT_LIO_EV_UNSPEC,
	ISCSIKIT_LIO_EV_LOGIN,		/* a new session's leading connection is logged in */
	ISCSIKIT_LIO_EV_CONN_ADD,	/* a connection joined an existing session */
	ISCSIKIT_LIO_EV_CONN_CLOSE,	/* a connection went away (A_REASON: conn reason) */
	ISCSIKIT_LIO_EV_SESSION_CLOSE,	/* a session went away (A_REASON: session reason) */
	ISCSIKIT_LIO_EV_LOGIN_FAILED,	/* the target answered a Login with a non-zero Status-Class */
};

enum iscsikit_lio_conn_reason {
	ISCSIKIT_LIO_CR_UNSPEC,
	ISCSIKIT_LIO_CR_LOGOUT,		/* a Logout request on this connection */
	ISCSIKIT_LIO_CR_DROPPED,	/* the transport failed: reset, closed, killed initiator */
	ISCSIKIT_LIO_CR_REINSTATED,	/* the target stopped it: connection or session reinstatement,
					 * the session closed by the target, a NOP-In timeout */
};

enum iscsikit_lio_sess_reason {
	ISCSIKIT_LIO_SR_UNSPEC,
	ISCSIKIT_LIO_SR_LOGOUT,		/* Logout with reason "close the session" */
	ISCSIKIT_LIO_SR_CONN_LOST,	/* its last connection failed (ERL 0 falls back to closing) */
	ISCSIKIT_LIO_SR_TIME2RETAIN,	/* DefaultTime2Retain ran out after the connections failed */
	ISCSIKIT_LIO_SR_REINSTATED,	/* a new login with the same ISID, or the target closed it
					 * (TPG disabled, ACL removed, module unloaded) */
};

#endif /* _ISCSIKIT_LIO_H */
