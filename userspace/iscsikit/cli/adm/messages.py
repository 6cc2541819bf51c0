"""iscsiadm 2.1.8's messages that more than one mode prints, and its usage text: declared once.
(Lines printed in one place only stay beside the code that prints them.)"""

DAEMON_DOWN = "can not connect to iSCSI daemon (111)!"
NO_RECORDS = "No records found"
NO_ACTIVE_SESSIONS = "No active sessions."
NO_SESSION = "No session found."
NO_MATCHING_SESSIONS = "No matching sessions found"
UPDATE_NEEDS_PAIRS = "update requires name and value"
BAD_DISCOVERY_TYPE = "Invalid command. Possibly missing discovery --type."
BAD_PORTAL = "Please specify portal as <ipaddr>[:<ipport>]"
# exec_disc2_op's line for -t isns without -p (its brackets differ from the one above)
ISNS_PORTAL = "Please specify portal as <ipaddr>:[<ipport>]"

USAGE = """\
iscsiadm -m discoverydb [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port -I ifaceN ... [-Dl]] | [[-p ip:port -t type] [-o operation] [-n name] [-v value] [-lD]] 
iscsiadm -m discovery [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port -I ifaceN ... [-l]] | [[-p ip:port] [-l | -D]] [-W]
iscsiadm -m node [-hV] [-d debug_level] [-P printlevel] [-L all,manual,automatic,onboot] [-W] [-U all,manual,automatic,onboot] [-S] [[-T targetname -p ip:port -I ifaceN] [-l | -u | -R | -s]] [[-o operation ] [-n name] [-v value]]
iscsiadm -m session [-hV] [-d debug_level] [-P printlevel] [-r sessionid | sysfsdir [-R | -u | -s] [-o operation] [-n name] [-v value]]
iscsiadm -m iface [-hV] [-d debug_level] [-P printlevel] [-I ifacename | -H hostno|MAC] [[-o operation ] [-n name] [-v value]] [-C ping [-a ip] [-b packetsize] [-c count] [-i interval]]
iscsiadm -m fw [-d debug_level] [-l] [-W] [[-n name] [-v value]]
iscsiadm -m host [-P printlevel] [-H hostno|MAC] [[-C chap [-x chap_tbl_idx]] | [-C flashnode [-A portal_type] [-x flashnode_idx]] | [-C stats]] [[-o operation] [-n name] [-v value]] 
iscsiadm -k priority
"""
