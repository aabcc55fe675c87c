package reports

import (
	"fmt"
	"strconv"
	"strings"
)

// answer writes the answer section, the first the report shows. Every row
// and cell carries data attributes (data-row, data-mode, data-status,
// data-col and the raw figures) so that a test or script reads the values
// without parsing prose. It uses the page's shared classes only.
func (p *page) answer() {
	at := Answer(p.run)
	p.s("<section id=\"answer\" data-outcome=\"", esc(at.Outcome), "\"><h2>The answer: is the ambient mesh's per-node proxy a single point of failure?</h2>\n")
	p.s("<p class=\"answer-overall\"><strong>", esc(at.Overall), "</strong></p>\n")
	if at.Empty {
		p.s("</section>\n")
		return
	}
	p.s("<table class=\"answer\"><caption>Each component's failure set against the radius of the node it runs on: ",
		"affected flows / total, affected pods and nodes, whether every affected flow stays inside that node's radius, ",
		"and disruption-seconds per affected pod. Several trials: the worst one.</caption>\n",
		"<thead><tr><th scope=\"col\">component</th><th scope=\"col\">mode</th><th scope=\"col\">trial</th>",
		"<th scope=\"col\">affected flows</th><th scope=\"col\">pods</th><th scope=\"col\">nodes</th>",
		"<th scope=\"col\">inside its node's radius</th><th scope=\"col\">disruption per affected pod</th><th scope=\"col\">in words</th></tr></thead>\n<tbody>\n")
	for i, r := range at.Rows {
		p.s("<tr data-row=\"", esc(r.Row), "\" data-mode=\"", esc(r.Mode), "\" data-status=\"", esc(r.Status),
			"\" data-fault=\"", esc(r.Fault), "\" data-scenario=\"", esc(r.Scenario), "\"")
		if r.Status == AnswerMeasured {
			p.s(" data-trial=\"", strconv.Itoa(r.Trial), "\"")
		}
		p.s(">")
		// The component spans its modes, so they read side by side.
		if i == 0 || at.Rows[i-1].Row != r.Row {
			n := 1
			for j := i + 1; j < len(at.Rows) && at.Rows[j].Row == r.Row; j++ {
				n++
			}
			p.s("<th scope=\"rowgroup\" rowspan=\"", strconv.Itoa(n), "\" data-col=\"component\">", esc(r.Component),
				"<br><small>fault ", esc(r.Fault), "</small></th>")
		}
		p.s("<td data-col=\"mode\">", esc(r.Mode), "</td>")
		if r.Status != AnswerMeasured {
			class := "na"
			switch r.Status {
			case AnswerError:
				class = "err"
			case AnswerIncomplete, AnswerNoVerdict:
				class = "nm"
			}
			p.s("<td colspan=\"7\" class=\"", class, "\" data-col=\"sentence\">", esc(r.Sentence), "</td></tr>\n")
			continue
		}
		p.s("<td data-col=\"trial\">")
		label := fmt.Sprintf("%s #%d", r.Scenario, r.Trial)
		if id := p.trialID(r.Scenario, r.Mode, r.Trial); id != "" {
			p.s("<a href=\"#", id, "\">", esc(label), "</a>")
		} else {
			p.s(esc(label))
		}
		p.s("<br>")
		p.verdictBadge(r.Verdict)
		if r.Trials > 1 {
			var parts []string
			for _, v := range sortedKeys(r.Verdicts) {
				parts = append(parts, fmt.Sprintf("%s×%d", v, r.Verdicts[v]))
			}
			p.s(" <small>worst of ", strconv.Itoa(r.Trials), " trials (", esc(strings.Join(parts, ", ")), ")</small>")
		}
		if r.Noisy {
			p.s(" <span class=\"flag\">NOISY</span>")
		}
		p.s("</td>")
		p.s("<td data-col=\"flows\" data-affected=\"", strconv.Itoa(r.Affected), "\" data-total=\"", strconv.Itoa(r.Total), "\">",
			strconv.Itoa(r.Affected), "/", strconv.Itoa(r.Total), "</td>")
		p.s("<td data-col=\"pods\" data-value=\"", strconv.Itoa(r.Pods), "\">", strconv.Itoa(r.Pods), "</td>")
		p.s("<td data-col=\"nodes\" data-value=\"", strconv.Itoa(r.Nodes), "\">", strconv.Itoa(r.Nodes), "</td>")
		p.s("<td data-col=\"inside\" data-value=\"", r.Containment(), "\" data-rule=\"", esc(r.Rule),
			"\" data-fault-nodes=\"", esc(strings.Join(r.FaultNodes, " ")), "\">")
		if r.Inside {
			p.s("<strong>yes</strong>")
		} else {
			p.s("<strong class=\"err\">no</strong>")
		}
		p.s("<br><small>rule: ", esc(r.RuleText()), "</small>")
		if len(r.Beyond) > 0 {
			p.s("<br><small>beyond: ", esc(strings.Join(r.Beyond, ", ")), "</small>")
		}
		p.s("</td>")
		p.s("<td data-col=\"disruption\" data-value=\"", strconv.FormatFloat(r.DisruptionPerPod, 'f', 3, 64), "\">",
			num(r.DisruptionPerPod, 2), " s</td>")
		p.s("<td data-col=\"sentence\">", esc(r.Sentence), "</td></tr>\n")
	}
	p.s("</tbody></table>\n</section>\n")
}

// trialID is the page id of a trial's section, or "" when it has none.
func (p *page) trialID(scenario, mode string, index int) string {
	for _, g := range p.scenarios {
		if g.name != scenario {
			continue
		}
		for _, tv := range g.trials[mode] {
			if tv.t.Index == index {
				return tv.id
			}
		}
	}
	return ""
}
