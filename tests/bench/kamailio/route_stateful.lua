function ksr_request_route()
    if KSR.rr.loose_route() > 0 then
        KSR.tm.t_relay()
        return 1
    end
    if KSR.is_ACK() then
        if KSR.tm.t_check_trans() > 0 then
            KSR.tm.t_relay()
        end
        return 1
    end
    if KSR.is_INVITE() then
        KSR.rr.record_route()
    end
    KSR.sethost("127.0.0.1")
    KSR.pv.seti("$rp", 5070)
    KSR.tm.t_relay()
    return 1
end
function ksr_reply_route()
    return 1
end
