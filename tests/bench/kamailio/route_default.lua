-- The twin of kamd's embedded default script (kamd/default.star), line by line.
function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        return 1 -- 483 already sent
    end
    if KSR.sanity.sanity_check_defaults() < 0 then
        return 1 -- 400 already sent
    end
    if KSR.is_CANCEL() or KSR.is_ACK() then
        if KSR.tm.t_check_trans() > 0 then
            KSR.tm.t_relay()
        end
        return 1
    end
    if KSR.siputils.has_totag() > 0 then
        if KSR.rr.loose_route() > 0 then
            KSR.tm.t_relay()
        else
            KSR.sl.sl_send_reply(404, "Not Here")
        end
        return 1
    end
    if KSR.is_myself_ruri() then
        if KSR.is_REGISTER() then
            KSR.registrar.save("location", 0)
            return 1
        end
        if KSR.is_OPTIONS() and KSR.pv.is_null("$rU") then
            KSR.sl.sl_send_reply(200, "OK")
            return 1
        end
        local rc = KSR.registrar.lookup("location")
        if rc == -1 then
            KSR.sl.sl_send_reply(404, "Not Found")
            return 1
        end
        if rc < 0 then
            if rc == -2 then
                KSR.sl.sl_send_reply(405, "Method Not Allowed")
            else
                KSR.sl.sl_send_reply(500, "Server Internal Error")
            end
            return 1
        end
    elseif KSR.is_REGISTER() then
        KSR.sl.sl_send_reply(403, "Not Our Domain")
        return 1
    end
    KSR.rr.record_route()
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
    return 1
end
function ksr_reply_route()
    return 1
end
