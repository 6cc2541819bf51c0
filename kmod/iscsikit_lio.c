// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * iscsikit_lio: one generic netlink message per LIO iSCSI target event.
 *
 * LIO's iSCSI target (iscsi_target_mod) tells userspace nothing when an
 * initiator logs in, logs out, drops or fails to log in: targetcli and
 * rtslib re-read configfs on a timer. This module multicasts an event on the
 * "events" group of the generic netlink family "iscsikit_lio" (version and
 * attributes in iscsikit_lio.h) for each of those.
 *
 * Why kprobes: iscsi_target_mod has no tracepoints in 6.1 (the target's
 * include/trace/events/target.h holds target_core's per-command
 * target_sequencer_start and target_cmd_complete; include/trace/events/iscsi.h
 * is the initiator's libiscsi debug output) and exports no notifier.
 * The functions below are where the 6.1 sources take the decisions we
 * report; each is a global (non-static) function, so it stays out of line
 * and is listed in /proc/kallsyms as "<name> [iscsi_target_mod]"
 * (tests/vm/test_kmod_events.py checks that in the guest). Only entry
 * kprobes are used: a kretprobe's return handler would run after the
 * function let go of the connection, when it may already be freed.
 *
 *  iscsi_post_login_handler(np, conn, zero_tsih)  drivers/target/iscsi/iscsi_target_login.c
 *      remembers zero_tsih (a new session or a connection joining one);
 *  iscsit_thread_get_cpumask(conn)                drivers/target/iscsi/iscsi_target.c
 *      called by iscsi_post_login_handler() after the negotiated connection
 *      and session parameters were copied to conn_ops/sess_ops, the LIO
 *      session id assigned and the connection counted, and before the RX
 *      thread is released (complete(&conn->rx_login_comp)): every login
 *      field is final and the connection cannot go away under us. The RX/TX
 *      threads also call it when the CPU mask changes; those calls are
 *      skipped (current is then one of the connection's threads);
 *  iscsit_tx_login_rsp(conn, class, detail)       drivers/target/iscsi/iscsi_target_util.c
 *      the one place that sends a failed Login Response (wrong CHAP secret:
 *      class 2 detail 1; initiator not in the ACLs: class 2 detail 2);
 *  iscsit_close_connection(conn)                  drivers/target/iscsi/iscsi_target.c
 *      every connection teardown; the reason is read from conn_state
 *      (TARG_CONN_STATE_IN_LOGOUT), transport_failed (set by the RX thread
 *      on a socket error) and connection_reinstatement;
 *  iscsit_close_session(sess, can_sleep)          drivers/target/iscsi/iscsi_target.c
 *      every session teardown, before it sets session_logout and
 *      session_reinstatement itself, so the flags still say why.
 *
 * Handlers run with preemption off (and from the Time2Retain timer in
 * softirq context): they only read the structures the probed function
 * holds, copy the facts into an skb allocated with GFP_ATOMIC and queue it.
 * One work item numbers the queued events and multicasts them in process
 * context, so no netlink code runs inside a probe, their order is their
 * number, and a reader sees any loss as a gap (a full socket buffer, or an
 * event this module could not build, counted in A_LOST).
 *
 * Module lifetime: the probes are registered while iscsi_target_mod is
 * loaded. A module notifier arms them when it arrives (MODULE_STATE_COMING,
 * as kernel/trace/trace_kprobe.c does for its own module probes) and
 * unregisters them when it goes (MODULE_STATE_GOING), so this module may
 * be loaded before iscsi_target_mod, and iscsi_target_mod may be unloaded
 * and reloaded under it. kprobes take no reference on the probed module
 * (kernel/kprobes.c: register_kprobe() drops it once armed), so neither
 * module pins the other. When iscsi_target_mod is loaded but a symbol is
 * missing, loading fails with one line in the kernel log.
 *
 * Nothing here reads a CHAP secret: the only authentication fact sent is
 * the method ("CHAP" or "None", sess->auth_type).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/jiffies.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <net/genetlink.h>
#include <scsi/iscsi_proto.h>
#include <target/iscsi/iscsi_target_core.h>
#include <target/iscsi/iscsi_transport.h>
#include <target/target_core_base.h>

#include "iscsikit_lio.h"

#define TARGET_MODULE "iscsi_target_mod"
/* An exported function every iscsi_target_mod has: when it cannot be probed the module is not there. */
#define PRESENCE_SYMBOL TARGET_MODULE ":iscsit_register_transport"
#define EVENT_SIZE 1280		/* two IQNs (ISCSI_IQN_LEN 224) and two addresses fit */

static char *also_probe;
module_param(also_probe, charp, 0444);
MODULE_PARM_DESC(also_probe, "one more iscsi_target_mod symbol to require (tests the refusal path)");

/* ---- generic netlink ------------------------------------------------------ */

static const struct genl_multicast_group ik_mcgrps[] = {
	/* initiator names and addresses: only CAP_NET_ADMIN may listen */
	{ .name = ISCSIKIT_LIO_MCGRP_EVENTS, .flags = GENL_MCAST_CAP_NET_ADMIN },
};

static int ik_get_status(struct sk_buff *skb, struct genl_info *info);

static const struct genl_small_ops ik_ops[] = {
	{
		.cmd = ISCSIKIT_LIO_CMD_GET_STATUS,
		.validate = GENL_DONT_VALIDATE_STRICT | GENL_DONT_VALIDATE_DUMP,
		.doit = ik_get_status,
	},
};

static struct genl_family ik_family __ro_after_init = {
	.name = ISCSIKIT_LIO_GENL_NAME,
	.version = ISCSIKIT_LIO_GENL_VERSION,
	.maxattr = 0,			/* requests carry no attributes */
	.module = THIS_MODULE,
	.small_ops = ik_ops,
	.n_small_ops = ARRAY_SIZE(ik_ops),
	.resv_start_op = __ISCSIKIT_LIO_CMD_MAX,
	.mcgrps = ik_mcgrps,
	.n_mcgrps = ARRAY_SIZE(ik_mcgrps),
};

/*
 * Handlers only copy the facts into an skb and queue it; one work item numbers
 * and multicasts the queue in order, in process context. So no netlink code
 * runs inside a probe (with whatever locks the probed function holds, or in
 * the Time2Retain timer's softirq), and the numbers follow the hooks' order.
 */
struct ik_cb {
	u32 seq_off;		/* where A_SEQ's payload is in skb->data */
	u32 lost_before;	/* events that could not be built just before this one */
};
#define IK_CB(skb) ((struct ik_cb *)(skb)->cb)
#define IK_QUEUE_MAX 4096	/* a starved worker loses (and counts) events past this */

static struct sk_buff_head ik_queue;	/* its lock also guards ik_queue_lost */
static u32 ik_queue_lost;
static DEFINE_MUTEX(ik_send_lock);	/* numbers and sends, in that order */
static u64 ik_seq;			/* last number given, under ik_send_lock */
static u64 ik_lost;			/* numbers given to events never sent, under ik_send_lock */

static void ik_send_queued(struct work_struct *work)
{
	struct sk_buff *skb;
	unsigned long flags;
	u32 lost;
	u64 seq;

	mutex_lock(&ik_send_lock);
	for (;;) {
		spin_lock_irqsave(&ik_queue.lock, flags);
		skb = __skb_dequeue(&ik_queue);
		if (skb) {
			lost = IK_CB(skb)->lost_before;
		} else {
			lost = ik_queue_lost;
			ik_queue_lost = 0;
		}
		spin_unlock_irqrestore(&ik_queue.lock, flags);
		/* a lost event keeps its number: readers see the gap */
		ik_seq += lost;
		ik_lost += lost;
		if (!skb)
			break;
		seq = ++ik_seq;
		memcpy(skb->data + IK_CB(skb)->seq_off, &seq, sizeof(seq));
		/* -ESRCH (nobody listens) is not a loss; a reader whose socket is full
		 * gets ENOBUFS from netlink and sees the gap in A_SEQ */
		genlmsg_multicast(&ik_family, skb, 0, 0, GFP_KERNEL);
	}
	mutex_unlock(&ik_send_lock);
}

static DECLARE_WORK(ik_work, ik_send_queued);

struct ik_msg {
	struct sk_buff *skb;
	void *hdr;
	struct nlattr *seq;
	bool broken;
};

static void ik_begin(struct ik_msg *m, u8 event)
{
	m->broken = false;
	m->skb = genlmsg_new(EVENT_SIZE, GFP_ATOMIC);
	if (!m->skb)
		goto fail;
	m->hdr = genlmsg_put(m->skb, 0, 0, &ik_family, 0, ISCSIKIT_LIO_CMD_EVENT);
	if (!m->hdr)
		goto fail;
	/* numbered by ik_send_queued() */
	m->seq = nla_reserve_64bit(m->skb, ISCSIKIT_LIO_A_SEQ, sizeof(u64), ISCSIKIT_LIO_A_PAD);
	if (!m->seq || nla_put_u8(m->skb, ISCSIKIT_LIO_A_EVENT, event) ||
	    nla_put_u64_64bit(m->skb, ISCSIKIT_LIO_A_TIME_NS, ktime_get_ns(), ISCSIKIT_LIO_A_PAD))
		goto fail;
	return;
fail:
	m->broken = true;
}

static void ik_put_str(struct ik_msg *m, int type, const char *s)
{
	if (!m->broken && nla_put_string(m->skb, type, s ? s : "") < 0)
		m->broken = true;
}

static void ik_put_u8(struct ik_msg *m, int type, u8 v)
{
	if (!m->broken && nla_put_u8(m->skb, type, v))
		m->broken = true;
}

static void ik_put_u16(struct ik_msg *m, int type, u16 v)
{
	if (!m->broken && nla_put_u16(m->skb, type, v))
		m->broken = true;
}

static void ik_put_u32(struct ik_msg *m, int type, u32 v)
{
	if (!m->broken && nla_put_u32(m->skb, type, v))
		m->broken = true;
}

static void ik_put_bin(struct ik_msg *m, int type, const void *p, int len)
{
	if (!m->broken && nla_put(m->skb, type, len, p))
		m->broken = true;
}

static void ik_send(struct ik_msg *m)
{
	unsigned long flags;

	if (!m->broken) {
		genlmsg_end(m->skb, m->hdr);
		IK_CB(m->skb)->seq_off = (u8 *)nla_data(m->seq) - m->skb->data;
	}
	spin_lock_irqsave(&ik_queue.lock, flags);
	if (m->broken || skb_queue_len(&ik_queue) >= IK_QUEUE_MAX) {
		ik_queue_lost++;
	} else {
		IK_CB(m->skb)->lost_before = ik_queue_lost;
		ik_queue_lost = 0;
		__skb_queue_tail(&ik_queue, m->skb);
		m->skb = NULL;
	}
	spin_unlock_irqrestore(&ik_queue.lock, flags);
	if (m->skb)
		nlmsg_free(m->skb);
	schedule_work(&ik_work);
}

static void ik_put_sockaddr(struct ik_msg *m, int addr_type, int port_type,
			    const struct sockaddr_storage *ss)
{
	char buf[64];
	u16 port = 0;

	if (ss->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	else if (ss->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	if (ss->ss_family == AF_INET || ss->ss_family == AF_INET6)
		snprintf(buf, sizeof(buf), "%pISc", ss);
	else
		buf[0] = '\0';
	ik_put_str(m, addr_type, buf);
	ik_put_u16(m, port_type, port);
}

static const char *ik_target_name(const struct iscsi_portal_group *tpg)
{
	return tpg && tpg->tpg_tiqn ? (const char *)tpg->tpg_tiqn->tiqn : "";
}

/* The session and connection facts every session/connection event carries. */
static void ik_put_session(struct ik_msg *m, const struct iscsit_session *sess)
{
	ik_put_str(m, ISCSIKIT_LIO_A_TARGET, ik_target_name(sess->tpg));
	ik_put_u16(m, ISCSIKIT_LIO_A_TPGT, sess->tpg ? sess->tpg->tpgt : 0);
	ik_put_str(m, ISCSIKIT_LIO_A_INITIATOR, sess->sess_ops->InitiatorName);
	ik_put_bin(m, ISCSIKIT_LIO_A_ISID, sess->isid, 6);
	ik_put_u16(m, ISCSIKIT_LIO_A_TSIH, sess->tsih);
	ik_put_u32(m, ISCSIKIT_LIO_A_SID, sess->sid);
	ik_put_u8(m, ISCSIKIT_LIO_A_SESSION_TYPE, sess->sess_ops->SessionType);
}

static void ik_put_conn(struct ik_msg *m, const struct iscsit_conn *conn)
{
	ik_put_u16(m, ISCSIKIT_LIO_A_CID, conn->cid);
	ik_put_sockaddr(m, ISCSIKIT_LIO_A_INITIATOR_ADDR, ISCSIKIT_LIO_A_INITIATOR_PORT, &conn->login_sockaddr);
	ik_put_sockaddr(m, ISCSIKIT_LIO_A_PORTAL_ADDR, ISCSIKIT_LIO_A_PORTAL_PORT, &conn->local_sockaddr);
	if (conn->conn_transport)
		ik_put_str(m, ISCSIKIT_LIO_A_TRANSPORT, conn->conn_transport->name);
}

/* ---- login: iscsi_post_login_handler() then iscsit_thread_get_cpumask() ---- */

#define IK_PENDING 64
static struct {
	const struct iscsit_conn *conn;
	unsigned long when;
	u8 zero_tsih;
} ik_pending[IK_PENDING];
static DEFINE_SPINLOCK(ik_pending_lock);

static int ik_post_login(struct kprobe *p, struct pt_regs *regs)
{
	const struct iscsit_conn *conn = (void *)regs_get_kernel_argument(regs, 1);
	u8 zero_tsih = regs_get_kernel_argument(regs, 2);
	unsigned long flags;
	int i, slot = -1;

	spin_lock_irqsave(&ik_pending_lock, flags);
	for (i = 0; i < IK_PENDING; i++) {
		/* an entry older than a second was left by a login we saw half of */
		if (!ik_pending[i].conn || ik_pending[i].conn == conn ||
		    time_after(jiffies, ik_pending[i].when + HZ)) {
			slot = i;
			break;
		}
	}
	if (slot >= 0) {
		ik_pending[slot].conn = conn;
		ik_pending[slot].when = jiffies;
		ik_pending[slot].zero_tsih = zero_tsih;
	}
	spin_unlock_irqrestore(&ik_pending_lock, flags);
	return 0;
}

/* 1: a new session, 0: a connection joining one; -1: not seen */
static int ik_take_pending(const struct iscsit_conn *conn)
{
	unsigned long flags;
	int i, zero_tsih = -1;

	spin_lock_irqsave(&ik_pending_lock, flags);
	for (i = 0; i < IK_PENDING; i++) {
		if (ik_pending[i].conn == conn) {
			zero_tsih = ik_pending[i].zero_tsih;
			ik_pending[i].conn = NULL;
			break;
		}
	}
	spin_unlock_irqrestore(&ik_pending_lock, flags);
	return zero_tsih;
}

static int ik_logged_in(struct kprobe *p, struct pt_regs *regs)
{
	const struct iscsit_conn *conn = (void *)regs_get_kernel_argument(regs, 0);
	const struct iscsit_session *sess = conn->sess;
	struct ik_msg m;
	int zero_tsih;

	/* the RX/TX threads' own calls (a changed CPU mask) are no login */
	if (current == conn->rx_thread || current == conn->tx_thread || !sess)
		return 0;
	zero_tsih = ik_take_pending(conn);
	if (zero_tsih < 0)	/* armed in the middle of this login */
		zero_tsih = atomic_read(&sess->nconn) == 1;

	ik_begin(&m, zero_tsih ? ISCSIKIT_LIO_EV_LOGIN : ISCSIKIT_LIO_EV_CONN_ADD);
	ik_put_session(&m, sess);
	ik_put_conn(&m, conn);
	/* iscsi_handle_authentication() (iscsi_target_nego.c) writes "CHAP" or NONE ("None");
	 * a login that skipped the security stage leaves it empty: no authentication */
	ik_put_str(&m, ISCSIKIT_LIO_A_AUTH, sess->auth_type[0] ? sess->auth_type : "None");
	ik_put_u8(&m, ISCSIKIT_LIO_A_HEADER_DIGEST, conn->conn_ops->HeaderDigest);
	ik_put_u8(&m, ISCSIKIT_LIO_A_DATA_DIGEST, conn->conn_ops->DataDigest);
	ik_put_u32(&m, ISCSIKIT_LIO_A_NCONN, atomic_read(&sess->nconn));
	ik_send(&m);
	return 0;
}

/* ---- login failed: iscsit_tx_login_rsp() --------------------------------- */

/*
 * The value of `key` in the current Login Request's text (NUL-separated
 * key=value pairs, RFC 7143 section 6.1), or "". Before the session's
 * parameter list exists (an initiator not in the ACLs is refused while the
 * first request is parsed, iscsi_target_locate_portal() in
 * iscsi_target_nego.c), that text is the only place the names are.
 */
static void ik_login_key(const struct iscsi_login *login, const char *key, char *out, size_t outlen)
{
	const struct iscsi_login_req *req = (const void *)login->req;
	u32 len = ntoh24(req->dlength);
	size_t klen = strlen(key);
	const char *p, *end;

	out[0] = '\0';
	if (!login->req_buf)
		return;
	/* req_buf is MAX_KEY_VALUE_PAIRS + 1 bytes (iscsi_login_init_conn() in iscsi_target_login.c) */
	len = min_t(u32, len, MAX_KEY_VALUE_PAIRS);
	p = login->req_buf;
	end = p + len;
	while (p < end) {
		size_t n = strnlen(p, end - p);

		if (n > klen && p[klen] == '=' && !memcmp(p, key, klen)) {
			strscpy(out, p + klen + 1, min_t(size_t, outlen, n - klen));
			return;
		}
		p += n + 1;
	}
}

static int ik_login_failed(struct kprobe *p, struct pt_regs *regs)
{
	const struct iscsit_conn *conn = (void *)regs_get_kernel_argument(regs, 0);
	u8 status_class = regs_get_kernel_argument(regs, 1);
	u8 status_detail = regs_get_kernel_argument(regs, 2);
	const struct iscsit_session *sess = conn->sess;
	const struct iscsi_login *login = conn->conn_login;
	const struct se_node_acl *acl = NULL;
	char name[ISCSI_IQN_LEN];
	struct ik_msg m;

	ik_begin(&m, ISCSIKIT_LIO_EV_LOGIN_FAILED);
	ik_put_u8(&m, ISCSIKIT_LIO_A_STATUS_CLASS, status_class);
	ik_put_u8(&m, ISCSIKIT_LIO_A_STATUS_DETAIL, status_detail);

	if (sess && sess->se_sess)
		acl = sess->se_sess->se_node_acl;
	/* past the ACL check the ACL names the initiator (a demo-mode ACL too) */
	if (acl)
		strscpy(name, acl->initiatorname, sizeof(name));
	else if (login)
		ik_login_key(login, "InitiatorName", name, sizeof(name));
	else
		name[0] = '\0';
	ik_put_str(&m, ISCSIKIT_LIO_A_INITIATOR, name);

	if (conn->tpg && conn->tpg->tpg_tiqn)
		strscpy(name, conn->tpg->tpg_tiqn->tiqn, sizeof(name));
	else if (login)
		ik_login_key(login, "TargetName", name, sizeof(name));
	else
		name[0] = '\0';
	ik_put_str(&m, ISCSIKIT_LIO_A_TARGET, name);
	ik_put_u16(&m, ISCSIKIT_LIO_A_TPGT, conn->tpg ? conn->tpg->tpgt : 0);
	if (sess)
		ik_put_bin(&m, ISCSIKIT_LIO_A_ISID, sess->isid, 6);
	else if (login)
		ik_put_bin(&m, ISCSIKIT_LIO_A_ISID, login->isid, 6);
	ik_put_conn(&m, conn);
	ik_send(&m);
	return 0;
}

/* ---- closing: iscsit_close_connection(), iscsit_close_session() ---------- */

static int ik_conn_closed(struct kprobe *p, struct pt_regs *regs)
{
	const struct iscsit_conn *conn = (void *)regs_get_kernel_argument(regs, 0);
	const struct iscsit_session *sess = conn->sess;
	struct ik_msg m;
	u8 reason;

	if (!sess)
		return 0;
	if (conn->conn_state == TARG_CONN_STATE_IN_LOGOUT)
		reason = ISCSIKIT_LIO_CR_LOGOUT;
	else if (atomic_read(&conn->transport_failed))
		reason = ISCSIKIT_LIO_CR_DROPPED;
	else if (atomic_read(&conn->connection_reinstatement))
		reason = ISCSIKIT_LIO_CR_REINSTATED;
	else
		reason = ISCSIKIT_LIO_CR_DROPPED;	/* the TX thread failed first */

	ik_begin(&m, ISCSIKIT_LIO_EV_CONN_CLOSE);
	ik_put_session(&m, sess);
	ik_put_conn(&m, conn);
	ik_put_u8(&m, ISCSIKIT_LIO_A_REASON, reason);
	/* still counted: iscsit_close_connection() decrements nconn later */
	ik_put_u32(&m, ISCSIKIT_LIO_A_NCONN, max(atomic_read(&sess->nconn) - 1, 0));
	ik_send(&m);
	return 0;
}

static int ik_session_closed(struct kprobe *p, struct pt_regs *regs)
{
	const struct iscsit_session *sess = (void *)regs_get_kernel_argument(regs, 0);
	struct ik_msg m;
	u8 reason;

	if (sess->time2retain_timer_flags & ISCSI_TF_EXPIRED)
		reason = ISCSIKIT_LIO_SR_TIME2RETAIN;
	else if (atomic_read(&sess->session_reinstatement))
		reason = ISCSIKIT_LIO_SR_REINSTATED;
	else if (atomic_read(&sess->session_logout))
		reason = ISCSIKIT_LIO_SR_LOGOUT;
	else
		reason = ISCSIKIT_LIO_SR_CONN_LOST;

	ik_begin(&m, ISCSIKIT_LIO_EV_SESSION_CLOSE);
	ik_put_session(&m, sess);
	ik_put_u8(&m, ISCSIKIT_LIO_A_REASON, reason);
	ik_put_u32(&m, ISCSIKIT_LIO_A_NCONN, 0);
	ik_send(&m);
	return 0;
}

static int ik_nothing(struct kprobe *p, struct pt_regs *regs)
{
	return 0;
}

/* ---- arming ----------------------------------------------------------------- */

static const struct {
	const char *symbol;
	kprobe_pre_handler_t handler;
} ik_hooks[] = {
	{ TARGET_MODULE ":iscsi_post_login_handler", ik_post_login },
	{ TARGET_MODULE ":iscsit_thread_get_cpumask", ik_logged_in },
	{ TARGET_MODULE ":iscsit_tx_login_rsp", ik_login_failed },
	{ TARGET_MODULE ":iscsit_close_connection", ik_conn_closed },
	{ TARGET_MODULE ":iscsit_close_session", ik_session_closed },
};
#define IK_NHOOKS ARRAY_SIZE(ik_hooks)

static struct kprobe ik_kps[IK_NHOOKS + 1];	/* + also_probe */
static char ik_also[KSYM_NAME_LEN + sizeof(TARGET_MODULE) + 1];
static DEFINE_MUTEX(ik_arm_lock);
static unsigned int ik_armed;			/* probes registered, under ik_arm_lock */
static bool ik_broken;				/* a symbol is missing in this load of the target */
static char ik_missing[sizeof(ik_also)];	/* under ik_arm_lock */

static struct kprobe ik_trial;		/* one probe at a time, on the failure path only */

/* 0 when `symbol` can be probed (the probe is removed again) */
static int ik_try_probe(const char *symbol)
{
	int ret;

	memset(&ik_trial, 0, sizeof(ik_trial));
	ik_trial.symbol_name = symbol;
	ik_trial.pre_handler = ik_nothing;
	ret = register_kprobe(&ik_trial);
	if (!ret)
		unregister_kprobe(&ik_trial);
	return ret;
}

static void ik_disarm_locked(void)
{
	struct kprobe *kps[IK_NHOOKS + 1];
	unsigned int i;

	if (ik_armed) {
		for (i = 0; i < ik_armed; i++)
			kps[i] = &ik_kps[i];
		unregister_kprobes(kps, ik_armed);	/* waits for running handlers */
	}
	ik_armed = 0;
	memset(ik_pending, 0, sizeof(ik_pending));
}

/* 0 armed (or already), -ENODEV iscsi_target_mod absent, else a symbol is missing */
static int ik_arm_locked(const char *consequence)
{
	struct kprobe *kps[IK_NHOOKS + 1];
	unsigned int i, n = IK_NHOOKS + (ik_also[0] ? 1 : 0);
	int ret;

	if (ik_armed || ik_broken)
		return ik_broken ? -ENOENT : 0;
	for (i = 0; i < n; i++) {
		memset(&ik_kps[i], 0, sizeof(ik_kps[i]));
		ik_kps[i].symbol_name = i < IK_NHOOKS ? ik_hooks[i].symbol : ik_also;
		ik_kps[i].pre_handler = i < IK_NHOOKS ? ik_hooks[i].handler : ik_nothing;
		kps[i] = &ik_kps[i];
	}
	ret = register_kprobes(kps, n);		/* all or none */
	if (!ret) {
		ik_armed = n;
		return 0;
	}
	/* which symbol failed, and is the target module there at all? */
	if (ik_try_probe(PRESENCE_SYMBOL))
		return -ENODEV;
	for (i = 0; i < n; i++) {
		ret = ik_try_probe(kps[i]->symbol_name);
		if (ret)
			break;
	}
	if (i == n)		/* it went away or came back meanwhile: the notifier retries */
		return -ENODEV;
	strscpy(ik_missing, kps[i]->symbol_name, sizeof(ik_missing));
	ik_broken = true;
	pr_err("cannot probe %s (error %d): this kernel's iSCSI target is not the one this module was written for; %s\n",
	       ik_missing, ret, consequence);
	return ret;
}

static int ik_module_event(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;

	if (strcmp(mod->name, TARGET_MODULE))
		return NOTIFY_DONE;
	mutex_lock(&ik_arm_lock);
	switch (action) {
	case MODULE_STATE_COMING:
	case MODULE_STATE_LIVE:		/* in case COMING came before we listened */
		if (!ik_armed && !ik_broken && !ik_arm_locked("no events from it"))
			pr_info("%s arrived: armed %u probes\n", TARGET_MODULE, ik_armed);
		break;
	case MODULE_STATE_GOING:
		ik_disarm_locked();
		ik_broken = false;
		ik_missing[0] = '\0';
		break;
	}
	mutex_unlock(&ik_arm_lock);
	return NOTIFY_DONE;
}

static struct notifier_block ik_module_nb = {
	.notifier_call = ik_module_event,
};

/* ---- GET_STATUS ----------------------------------------------------------------- */

static int ik_get_status(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	u64 seq, lost;
	void *hdr;
	u8 armed;

	msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &ik_family, 0, ISCSIKIT_LIO_CMD_GET_STATUS);
	if (!hdr)
		goto nospace;
	/* every event numbered up to seq has been multicast (or counted lost) */
	mutex_lock(&ik_send_lock);
	seq = ik_seq;
	lost = ik_lost;
	mutex_unlock(&ik_send_lock);
	mutex_lock(&ik_arm_lock);
	armed = ik_armed > 0;
	if (nla_put_u32(msg, ISCSIKIT_LIO_A_VERSION, ISCSIKIT_LIO_GENL_VERSION) ||
	    nla_put_u8(msg, ISCSIKIT_LIO_A_ARMED, armed) ||
	    nla_put_u64_64bit(msg, ISCSIKIT_LIO_A_SEQ, seq, ISCSIKIT_LIO_A_PAD) ||
	    nla_put_u64_64bit(msg, ISCSIKIT_LIO_A_LOST, lost, ISCSIKIT_LIO_A_PAD) ||
	    (ik_missing[0] && nla_put_string(msg, ISCSIKIT_LIO_A_MISSING, ik_missing))) {
		mutex_unlock(&ik_arm_lock);
		goto nospace;
	}
	mutex_unlock(&ik_arm_lock);
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
nospace:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

/* ---- module ----------------------------------------------------------------------- */

static int __init ik_init(void)
{
	int ret;

	skb_queue_head_init(&ik_queue);
	if (also_probe && also_probe[0])
		snprintf(ik_also, sizeof(ik_also), "%s:%s", TARGET_MODULE, also_probe);
	ret = genl_register_family(&ik_family);
	if (ret) {
		pr_err("cannot register generic netlink family %s (error %d); not loading\n",
		       ISCSIKIT_LIO_GENL_NAME, ret);
		return ret;
	}
	/* listen first: a target module that arrives from here on is armed by the notifier */
	ret = register_module_notifier(&ik_module_nb);
	if (ret)
		goto out_family;
	mutex_lock(&ik_arm_lock);
	ret = ik_arm_locked("not loading");
	mutex_unlock(&ik_arm_lock);
	if (ret == -ENODEV) {
		pr_info("family %s v%d ready; %s not loaded yet, probes armed when it is\n",
			ISCSIKIT_LIO_GENL_NAME, ISCSIKIT_LIO_GENL_VERSION, TARGET_MODULE);
		return 0;
	}
	if (ret)
		goto out_notifier;	/* ik_arm_locked() said which symbol */
	pr_info("family %s v%d ready; armed %u probes on %s\n",
		ISCSIKIT_LIO_GENL_NAME, ISCSIKIT_LIO_GENL_VERSION, ik_armed, TARGET_MODULE);
	return 0;

out_notifier:
	unregister_module_notifier(&ik_module_nb);
	flush_work(&ik_work);
	skb_queue_purge(&ik_queue);
out_family:
	genl_unregister_family(&ik_family);
	return ret;
}

static void __exit ik_exit(void)
{
	/* no notifier callback runs once this returns; then no probe handler */
	unregister_module_notifier(&ik_module_nb);
	mutex_lock(&ik_arm_lock);
	ik_disarm_locked();
	mutex_unlock(&ik_arm_lock);
	/* nothing queues any more: send what is queued, then close the family */
	flush_work(&ik_work);
	skb_queue_purge(&ik_queue);
	genl_unregister_family(&ik_family);
}

module_init(ik_init);
module_exit(ik_exit);

MODULE_DESCRIPTION("LIO iSCSI target events (logins, logouts, drops, failed logins) over generic netlink");
MODULE_AUTHOR("iscsikit");
MODULE_LICENSE("GPL");
MODULE_VERSION("1");
